"""The booru clients and the scrape job against a loopback fake (tests/booru_server.py); no internet."""

from __future__ import annotations

import time

import pytest

from lora_trainer import __version__
from lora_trainer.cli import main as cli_main
from lora_trainer.dataset.booru import (
    DanbooruClient,
    GelbooruClient,
    Http,
    HttpConfig,
    NetworkError,
    RateLimiter,
    SafebooruClient,
    has_custom_sort,
    make_client,
)
from lora_trainer.dataset.images import file_md5
from lora_trainer.dataset.scrape import (
    ScrapeOptions,
    download,
    preview,
    tags_to_caption,
)
from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.progress import CancelToken
from tests.booru_server import FakeBooru, FakePost, default_posts, make_image

KEY, USER = "secret-key", "1234"


def fast_http(**kw) -> Http:
    """No rate limit and tiny back-off, so tests stay quick; timeouts short enough to hit."""
    cfg = {"requests_per_s": 0, "backoff_s": 0.01, "timeout_s": 2.0, "retries": 3}
    cfg.update(kw)
    return Http(HttpConfig(**cfg))


def gelbooru(fake: FakeBooru, key: str = KEY, **kw) -> GelbooruClient:
    window = kw.pop("deep_window", None)
    return GelbooruClient(api_url=fake.url + "/index.php", api_key=key, user_id=USER, http=fast_http(**kw), deep_window=window)


@pytest.fixture
def fake():
    with FakeBooru(api_key=KEY, user_id=USER) as f:
        yield f


def no_part_files(folder) -> bool:
    return not list(folder.rglob("*.part"))


# ----------------------------------------------------------------------------------------------
# Preview and authentication


def test_preview_counts_shows_thumbnails_and_links_the_search(fake, tmp_path):
    c = gelbooru(fake)
    p = preview(c, "1girl  -short_hair", cap=15, n_thumbnails=4)
    assert p.count == 20  # 30 posts, every third has short_hair
    assert p.planned == 15
    assert p.tags == "1girl -short_hair"
    assert len(p.thumbnails) == 4 and all("/thumbnails/" in u for u in p.thumbnails)
    assert p.search_url == f"{fake.url}/index.php?page=post&s=list&tags=1girl+-short_hair"
    assert not list(tmp_path.iterdir())  # nothing downloaded
    assert all(q["api_key"] == KEY and q["user_id"] == USER for q in fake.requests_to("/index.php"))
    assert fake.user_agents == {f"LoRA-Studio/{__version__} (+https://github.com/lora-studio/lora-studio)"}


def test_missing_key_is_explained_in_one_sentence(fake):
    with pytest.raises(StudioError) as e:
        preview(gelbooru(fake, key=""), "1girl")
    text = str(e.value)
    assert "HTTP 401" in e.value.message
    assert "requires an API key" in e.value.fix and "API Access Credentials" in e.value.fix
    assert KEY not in text


def test_empty_result_has_no_post_key(fake, tmp_path):
    c = gelbooru(fake)
    p = preview(c, "no_such_tag")
    assert p.count == 0 and p.thumbnails == ()
    result = download(c, "no_such_tag", tmp_path / "ds")
    assert result.listed == 0 and result.downloaded == []


def test_empty_tags_are_refused(fake):
    with pytest.raises(StudioError, match="no tags"):
        preview(gelbooru(fake), "   ")


# ----------------------------------------------------------------------------------------------
# Download


def test_download_respects_the_cap_and_names_files_by_md5(fake, tmp_path):
    ds = tmp_path / "dataset"
    events = []
    result = download(gelbooru(fake), "1girl", ds, ScrapeOptions(cap=7, page_limit=5), progress=events.append)
    assert result.listed == 7 and len(result.downloaded) == 7
    newest = sorted(fake.posts, key=lambda p: -p.id)[:7]
    assert sorted(f.name for f in ds.iterdir()) == sorted(p.name for p in newest)
    for p in newest:
        assert (ds / p.name).read_bytes() == p.data
    assert len(fake.requests_to("/index.php")) == 2  # 7 posts: two pages of 5
    assert events[-1].fraction == 1.0
    assert any(e.text == "downloaded 7/7" for e in events)
    assert no_part_files(ds)


def test_cursor_pages_past_the_deep_window(tmp_path):
    with FakeBooru(posts=default_posts(30), deep_window=10) as fake:
        # without knowing the window, the site's refusal ends the search early
        blind = download(gelbooru(fake, key=""), "solo", tmp_path / "blind", ScrapeOptions(page_limit=5))
        assert blind.listed == 15  # pid 0..2; pid 3 is "too deep"
        fake.log.clear()
        result = download(gelbooru(fake, key="", deep_window=10), "solo", tmp_path / "ds", ScrapeOptions(page_limit=5))
        assert result.listed == 30 and len(result.downloaded) == 30
        queries = [(q["tags"], q["pid"]) for q in fake.requests_to("/index.php")]
        assert ("solo id:<21", "0") in queries and ("solo id:<11", "1") in queries
        assert all(int(pid) * 5 + 5 <= 10 for _, pid in queries)


def test_custom_sort_stops_at_the_window_with_a_log_line(tmp_path):
    assert has_custom_sort("1girl sort:score") and not has_custom_sort("1girl sort:id:desc")
    with FakeBooru(posts=default_posts(30), deep_window=10) as fake:
        events = []
        result = download(gelbooru(fake, key="", deep_window=10), "solo sort:score", tmp_path, ScrapeOptions(page_limit=5), progress=events.append)
        assert result.listed == 10
        assert any("can not page past 10" in e.log for e in events)


def test_existing_images_are_skipped_by_md5(fake, tmp_path):
    ds = tmp_path / "dataset"
    ds.mkdir()
    newest = sorted(fake.posts, key=lambda p: -p.id)
    (ds / "renamed_by_user.png").write_bytes(newest[0].data)  # same content, other name
    (ds / f"sample_{newest[1].md5}.jpg").write_bytes(make_image(999, "JPEG"))  # an earlier sample download
    events = []
    result = download(gelbooru(fake), "1girl", ds, ScrapeOptions(cap=5), progress=events.append)
    assert result.skipped_existing == 2 and len(result.downloaded) == 3
    fetched = {path for _, path, _ in fake.log if path.startswith("/images/")}
    assert f"/images/ab/cd/{newest[0].name}" not in fetched
    assert sum("already in the dataset" in e.log for e in events) == 2
    # a second run finds everything
    again = download(gelbooru(fake), "1girl", ds, ScrapeOptions(cap=5))
    assert again.skipped_existing == 5 and again.downloaded == []


def test_huge_originals_are_replaced_by_the_sample(tmp_path):
    posts = default_posts(3)
    posts[0].width, posts[0].height = 6000, 4000
    posts[0].sample = make_image(500, "JPEG", (12, 8))
    with FakeBooru(posts=posts) as fake:
        result = download(gelbooru(fake, key=""), "solo", tmp_path / "a", ScrapeOptions(max_side=4096))
        got = {f.name: f.read_bytes() for f in (tmp_path / "a").iterdir()}
        assert got[f"{posts[0].md5}.jpg"] == posts[0].sample
        assert len(result.downloaded) == 3
        download(gelbooru(fake, key=""), "solo", tmp_path / "b", ScrapeOptions(max_side=8000))
        assert (tmp_path / "b" / posts[0].name).read_bytes() == posts[0].data


def test_unsupported_types_are_skipped_without_downloading(tmp_path):
    posts = default_posts(4)
    posts[0].ext, posts[1].ext = "gif", "webm"
    with FakeBooru(posts=posts) as fake:
        events = []
        result = download(gelbooru(fake, key=""), "solo", tmp_path, progress=events.append)
        assert result.skipped_type == 2 and len(result.downloaded) == 2
        assert not any(p.endswith((".gif", ".webm")) for _, p, _ in fake.log)
        assert any("not png/jpg/jpeg/webp" in e.log for e in events)


def test_tags_become_captions(fake, tmp_path):
    result = download(gelbooru(fake), "1girl", tmp_path, ScrapeOptions(cap=3, tags_as_captions=True))
    assert len(result.captions) == 3
    for image in result.downloaded:
        text = image.with_suffix(".txt").read_text("utf-8")
        assert text in ("1girl, solo, long hair, ^_^\n", "1girl, solo, short hair, ^_^\n")
    assert tags_to_caption(("blue_hair", "^_^", "hatsune_miku_(cosplay)")) == "blue hair, ^_^, hatsune miku (cosplay)"


def test_cancel_between_downloads_leaves_only_complete_files(fake, tmp_path):
    token = CancelToken()

    def progress(event):
        if event.text == "downloaded 2/10":
            token.cancel()

    with pytest.raises(Cancelled):
        download(gelbooru(fake), "1girl", tmp_path, ScrapeOptions(cap=10), progress=progress, cancel=token)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and no_part_files(tmp_path)
    by_name = {p.name: p for p in fake.posts}
    for f in files:
        assert file_md5(f) == by_name[f.name].md5


def test_cancel_during_a_download_removes_the_part_file(tmp_path):
    posts = [FakePost(1, "png", make_image(1, "PNG", (512, 512)) + b"", 512, 512, ("solo",))]
    with FakeBooru(posts=posts) as fake:
        token = CancelToken()
        c = gelbooru(fake, key="")
        real_get = c.http.get

        def get_then_cancel(url, *a, **kw):
            r = real_get(url, *a, **kw)
            if "/images/" in url:
                token.cancel()  # the stream is open: the first chunk sees the cancel
            return r

        c.http.get = get_then_cancel
        with pytest.raises(Cancelled):
            download(c, "solo", tmp_path, cancel=token)
        assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Failures: retries, timeouts, truncation


def test_server_errors_are_retried_then_succeed(fake, tmp_path):
    fake.fail["/index.php"] = [500, 503, 429]
    p = preview(gelbooru(fake), "1girl")
    assert p.count == 30
    assert len(fake.requests_to("/index.php")) == 3 + 2


def test_retries_are_bounded(fake):
    fake.fail["/index.php"] = [500] * 10
    with pytest.raises(NetworkError, match="after 4 attempts: HTTP 500"):
        gelbooru(fake, retries=3).count("1girl")
    assert len(fake.requests_to("/index.php")) == 4


def test_a_slow_answer_times_out_and_is_retried(fake):
    fake.slow["/index.php"] = [1.5]
    c = gelbooru(fake, timeout_s=0.3)
    assert c.count("1girl") == 30
    assert len(fake.requests_to("/index.php")) == 2


def test_truncated_image_is_retried_then_complete(fake, tmp_path):
    newest = max(fake.posts, key=lambda p: p.id)
    fake.truncate[f"/images/ab/cd/{newest.name}"] = 1
    result = download(gelbooru(fake), "1girl", tmp_path, ScrapeOptions(cap=1))
    assert result.failed == [] and (tmp_path / newest.name).read_bytes() == newest.data
    assert len(fake.requests_to(f"/images/ab/cd/{newest.name}")) == 2


def test_always_truncated_image_is_skipped_with_a_log_line(fake, tmp_path):
    newest = max(fake.posts, key=lambda p: p.id)
    fake.truncate[f"/images/ab/cd/{newest.name}"] = 99
    events = []
    result = download(gelbooru(fake, retries=2), "1girl", tmp_path, ScrapeOptions(cap=2), progress=events.append)
    assert len(result.downloaded) == 1 and len(result.failed) == 1
    assert "incomplete after 3 attempts" in result.failed[0][1]
    assert any(f"skip post {newest.id}" in e.log for e in events)
    assert not (tmp_path / newest.name).exists() and no_part_files(tmp_path)


def test_a_corrupt_image_is_refused_before_it_lands(tmp_path):
    posts = default_posts(2)
    posts[0].data = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20
    with FakeBooru(posts=posts) as fake:
        result = download(gelbooru(fake, key=""), "solo", tmp_path)
        assert len(result.downloaded) == 1 and len(result.failed) == 1
        assert sorted(f.name for f in tmp_path.iterdir()) == [posts[1].name]


# ----------------------------------------------------------------------------------------------
# Rate limit


def test_rate_limiter_spaces_calls():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert slept == [0.5, 0.5, 0.5, 0.5]
    now[0] += 10  # after a pause, no wait
    limiter.wait()
    assert len(slept) == 4


def test_requests_are_rate_limited_end_to_end(fake, tmp_path):
    c = gelbooru(fake, requests_per_s=20)
    t0 = time.monotonic()
    download(c, "1girl", tmp_path, ScrapeOptions(cap=5))
    elapsed = time.monotonic() - t0
    times = sorted(t for t, _, _ in fake.log)
    assert len(times) == 6  # one listing page + five images
    assert elapsed >= 5 / 20 * 0.9  # six requests need at least five intervals of 50 ms


# ----------------------------------------------------------------------------------------------
# Danbooru and Safebooru behind the same interface


def test_danbooru_cursor_and_tag_limit(fake, tmp_path):
    c = DanbooruClient(api_url=fake.url, http=fast_http())
    assert c.count("solo") == 30
    posts = list(c.iter_posts("solo", limit=7))
    assert [p.id for p in posts] == list(range(30, 0, -1))
    pages = [q["page"] for q in fake.requests_to("/posts.json")]
    assert pages[:3] == ["1", "b24", "b17"]
    assert posts[0].rating == "general" and posts[0].tags[:2] == ("1girl", "solo")
    with pytest.raises(StudioError, match="only 2 tags"):
        c.count("1girl solo long_hair")
    result = download(c, "solo", tmp_path, ScrapeOptions(cap=4))
    assert len(result.downloaded) == 4


def test_safebooru_count_from_xml_and_urls_from_directory(fake, tmp_path):
    c = make_client("safebooru", fake.url + "/safebooru/index.php", http=fast_http())
    assert isinstance(c, SafebooruClient)
    p = preview(c, "short_hair")
    assert p.count == 10
    post = c.search("short_hair", limit=1)[0]
    src = max((q for q in fake.posts if "short_hair" in q.tags), key=lambda q: q.id)
    assert post.md5 == src.md5 and post.file_url == f"{fake.url}/images/ab/cd/{src.name}"
    result = download(c, "short_hair", tmp_path, ScrapeOptions(cap=3))
    assert len(result.downloaded) == 3


def test_unknown_site_is_refused():
    with pytest.raises(StudioError, match="gelbooru, danbooru, safebooru"):
        make_client("pixiv")


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_scrape_with_yes_and_key_from_env(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GELBOORU_API_KEY", KEY)
    monkeypatch.setenv("GELBOORU_USER_ID", USER)
    argv = ["scrape", "--tags", "1girl", "--limit", "3", "--api-url", fake.url + "/index.php", "--project", "miku", "--root", str(tmp_path), "--rate", "50", "--tags-as-captions", "--yes"]
    assert cli_main(argv) == 0
    ds = tmp_path / "miku" / "dataset"
    assert len(list(ds.glob("*.png")) + list(ds.glob("*.jpg"))) == 3 and len(list(ds.glob("*.txt"))) == 3
    out = capsys.readouterr().out
    assert "30 results" in out and "page=post&s=list" in out


def test_cli_scrape_without_confirmation_downloads_nothing(fake, tmp_path, capsys):
    argv = ["scrape", "--tags", "1girl", "--api-url", fake.url + "/index.php", "--api-key", KEY, "--user-id", USER, "--project", "p", "--root", str(tmp_path), "--rate", "50"]
    assert cli_main(argv) == 1
    assert list((tmp_path / "p" / "dataset").iterdir()) == []
    assert "Not confirmed" in capsys.readouterr().out


def test_cli_scrape_401_is_a_sentence(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GELBOORU_API_KEY", raising=False)
    argv = ["scrape", "--tags", "1girl", "--api-url", fake.url + "/index.php", "--project", "p", "--root", str(tmp_path), "--yes"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "API Access Credentials" in err and "Traceback" not in err
