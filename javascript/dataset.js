// LoRA Studio, Dataset tab: in the duplicate grid, dim the images marked "remove" so the kept one
// of each group stands out. The server owns the keep/remove choice (a click toggles it there and
// sends the grid back with new captions); this only reads the captions. Both gradio 3.41 and 4.40
// render gallery items as `.thumbnail-item` with a `.caption-label`.
(function () {
    "use strict";

    const GRID = "#lora_studio_dataset_dedupe_gallery";
    const REMOVE = "✗ remove";

    function root() {
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function mark(grid) {
        grid.querySelectorAll(".thumbnail-item").forEach(function (item) {
            const label = item.querySelector(".caption-label");
            const remove = !!label && label.textContent.trim().startsWith(REMOVE);
            item.classList.toggle("ls-dup-remove", remove);
            item.classList.toggle("ls-dup-keep", !!label && !remove);
        });
    }

    let observed = null;

    function attach() {
        const grid = root().querySelector(GRID);
        if (!grid || grid === observed) return;
        observed = grid;
        new MutationObserver(function () { mark(grid); }).observe(grid, { childList: true, subtree: true, characterData: true });
        mark(grid);
    }

    // The tab is built after this script runs (and rebuilt on the WebUI's "Reload UI"): look again
    // until the grid exists, then let the observer follow its changes.
    setInterval(attach, 1000);
})();
