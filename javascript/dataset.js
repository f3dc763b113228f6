// LoRA Studio, Dataset tab: the duplicate grid.
// - A click on a thumbnail is reported to the server (which owns the keep/remove choice): the
//   index goes into a hidden textbox and a hidden button is clicked, the pattern the WebUI's own
//   scripts use. The gallery's select event is not used: gradio 3.41 and 4.40 both keep the
//   selection when the grid comes back, so a second click on the same image would be lost.
// - Images marked "remove" are dimmed, the kept ones outlined (read from the captions).
// Both gradio versions render gallery items as `.thumbnail-item` with a `.caption-label`.
(function () {
    "use strict";

    const GRID = "#lora_studio_dataset_dedupe_gallery";
    const REMOVE = "✗ remove";

    function root() {
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function items(grid) {
        return Array.from(grid.querySelectorAll(".thumbnail-item"));
    }

    function mark(grid) {
        items(grid).forEach(function (item) {
            const label = item.querySelector(".caption-label");
            const remove = !!label && label.textContent.trim().startsWith(REMOVE);
            item.classList.toggle("ls-dup-remove", remove);
            item.classList.toggle("ls-dup-keep", !!label && !remove);
        });
    }

    function report(index) {
        const box = root().querySelector("#lora_studio_dataset_dedupe_click textarea, #lora_studio_dataset_dedupe_click input");
        const button = root().querySelector("#lora_studio_dataset_dedupe_toggle");
        if (!box || !button) return;
        box.value = index + ":" + Date.now(); // the nonce makes every click a new value
        box.dispatchEvent(new Event("input", { bubbles: true }));
        button.click();
    }

    let observed = null;

    function attach() {
        const grid = root().querySelector(GRID);
        if (!grid || grid === observed) return;
        observed = grid;
        grid.addEventListener("click", function (e) {
            const item = e.target.closest(".thumbnail-item");
            if (!item) return;
            const index = items(grid).indexOf(item);
            if (index >= 0) report(index);
        }, true);
        new MutationObserver(function () { mark(grid); }).observe(grid, { childList: true, subtree: true, characterData: true });
        mark(grid);
    }

    // The tab is built after this script runs (and rebuilt on the WebUI's "Reload UI"): look again
    // until the grid exists; the listener and the observer then follow its changes.
    setInterval(attach, 1000);
})();
