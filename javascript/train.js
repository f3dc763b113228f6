// LoRA Studio, Train tab: keeps the run view (loss chart, saved epochs, samples) fresh.
// While the Train tab is shown, a hidden poll button is clicked every 2 s; the server answers
// with no change unless the run moved on. The first time the tab is shown after a page load, its
// Reload button is pressed once, so the form shows the project's saved settings (the page may
// have been built before they were saved) and the dataset's step preview.
(function () {
    "use strict";

    let loaded = false;

    function root() {
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function click(id) {
        const button = root().querySelector("#" + id);
        if (button && !button.disabled) button.click();
    }

    function tick() {
        if (document.hidden) return;
        const tab = root().querySelector("#lora_studio_train_tab");
        if (!tab || tab.offsetParent === null) return;
        if (!loaded) {
            loaded = true;
            click("lora_studio_train_load");
        }
        click("lora_studio_train_poll");
    }

    setInterval(tick, 2000);
})();
