// LoRA Studio: keeps the job panel fresh. Loaded by the WebUI (javascript/ folder) and by the
// standalone app, so it uses nothing from the WebUI's script.js.
(function () {
    "use strict";

    function root() {
        // The WebUI and gradio 3 put the app in a shadow root of <gradio-app>; gradio 4 does not.
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function tabVisible() {
        // The job panel, not "#lora_studio": a nested Blocks' elem_id is not in the page (gradio 4
        // standalone, and the WebUI wraps the tab as #tab_lora_studio), so polling never started.
        const panel = root().querySelector("#lora_studio_job_panel");
        return !!panel && panel.offsetParent !== null;
    }

    function poll() {
        if (document.hidden || !tabVisible()) return;
        const button = root().querySelector("#lora_studio_poll");
        if (button && !button.disabled) button.click();
    }

    // The project picker was filled when the server built the tab: on a page (re)load, ask once
    // for today's list and the project last chosen (the 🔄 button's handler answers both).
    let projectsAsked = false;
    function askProjectsOnce() {
        if (projectsAsked || !tabVisible()) return;
        const button = root().querySelector("#lora_studio_refresh");
        if (!button) return;
        projectsAsked = true;
        button.click();
    }

    // Once a second is enough for a progress bar and keeps the queue quiet.
    setInterval(function () {
        askProjectsOnce();
        poll();
    }, 1000);
})();
