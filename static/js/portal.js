// Small behaviours of the portal; everything else is plain HTML and htmx.
(function () {
  "use strict";

  // Connection form: show only the fields of the selected connection type.
  function showFieldsForKind(form) {
    const select = form.querySelector("select[name=kind]");
    if (!select) return;
    form.querySelectorAll("[data-kind]").forEach(function (input) {
      const wrapper = input.closest(".field") || input;
      const shown = input.dataset.kind === select.value;
      wrapper.hidden = !shown;
    });
  }

  // "Trust this certificate" on an unsaved form: pin the thumbprint in the form; saving keeps it.
  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-use-thumbprint]");
    if (!button) return;
    const form = button.closest("form");
    const input = form && form.querySelector("input[name=tls_thumbprint]");
    if (!input) return;
    input.value = button.dataset.useThumbprint;
    const note = document.createElement("p");
    note.className = "small mt-2 mb-0";
    note.textContent = "The thumbprint is now in the form: test again, then save to keep it.";
    button.replaceWith(note);
  });

  function flash(message) {
    const area = document.getElementById("flash");
    if (!area) return;
    const alert = document.createElement("div");
    alert.className = "alert alert-danger alert-dismissible";
    alert.setAttribute("role", "alert");
    alert.textContent = message;
    area.replaceChildren(alert);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-connection-form]").forEach(function (form) {
      showFieldsForKind(form);
      form.addEventListener("change", function (event) {
        if (event.target.name === "kind") showFieldsForKind(form);
      });
    });
  });

  // Live connection status: the server pushes every sync start and finish; polling stays as a fallback.
  function watchConnectionStatus() {
    if (!document.querySelector("[data-status-url]") || !window.WebSocket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/ws/inventory/connections/");
    const lastStatus = {};  // by connection id: a fast sync can finish before its badge is redrawn
    socket.addEventListener("message", function (event) {
      const data = JSON.parse(event.data);
      if (data.event !== "connection.status") return;
      const badge = document.getElementById("connection-status-" + data.connection.id);
      if (!badge) return;
      const before = lastStatus[data.connection.id] || badge.dataset.status;
      lastStatus[data.connection.id] = data.connection.status;
      if (before === data.connection.status) return;
      if (data.connection.status === "syncing") {
        htmx.ajax("GET", badge.dataset.statusUrl, {target: badge, swap: "outerHTML"});
      } else {
        location.reload();  // a finished sync changes the counts and lists on the page
      }
    });
  }
  document.addEventListener("DOMContentLoaded", watchConnectionStatus);

  document.addEventListener("htmx:responseError", function (event) {
    const status = event.detail.xhr.status;
    flash("The server could not complete the request (HTTP " + status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    flash("Cannot reach the VA Fleet server. Check that it is running, then reload the page.");
  });
})();
