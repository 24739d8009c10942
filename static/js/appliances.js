// The appliance pages: static-address fields follow the addressing choice, and fleet progress arrives live.
(function () {
  "use strict";

  // Appliance forms: the address fields only matter for static addressing.
  function showAddressFields(form) {
    const select = form.querySelector("select[name=addressing]");
    if (!select) return;
    form.querySelectorAll("[data-addressing]").forEach(function (input) {
      (input.closest(".field") || input).hidden = select.value !== input.dataset.addressing;
    });
  }

  const COLORS = {
    ready: "success", succeeded: "success", failed: "danger", unreachable: "warning", partial: "warning",
    deploying: "info", removing: "info", running: "info",
  };

  function setBadge(badge, state, label) {
    if (!badge) return;
    badge.className = "badge text-bg-" + (COLORS[state] || "secondary");
    badge.dataset.state = state;
    badge.textContent = label;
  }

  function setText(element, text) {
    if (element) element.textContent = text;
  }

  function size(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : value) + "\u00a0" + units[unit];
  }

  function showItem(item) {
    const row = document.getElementById("item-" + item.id);
    if (!row) {
      // A new item of the operation shown here: the page lists it after a reload.
      const head = document.querySelector("[data-operation]");
      if (head && String(item.operation) === head.dataset.operation) location.reload();
      return;
    }
    setBadge(row.querySelector("[data-field=state] .badge"), item.state, item.state_label);
    setText(row.querySelector("[data-field=phase]"), item.phase || "—");
    setText(row.querySelector("[data-field=message]"), item.message);
    setText(row.querySelector("[data-field=bytes_sent]"), size(item.bytes_sent));
    const bar = row.querySelector("[data-field=percent]");
    if (bar) {
      bar.style.width = item.percent + "%";
      bar.textContent = item.percent + "%";
      bar.classList.toggle("bg-danger", item.state === "failed");
      bar.classList.toggle("bg-success", item.state === "succeeded");
      bar.parentElement.setAttribute("aria-valuenow", item.percent);
    }
  }

  function showOperation(operation) {
    setBadge(document.getElementById("operation-state-" + operation.id), operation.state, operation.state_label);
    const message = document.getElementById("operation-message-" + operation.id);
    if (message) {
      message.textContent = operation.message;
      message.classList.toggle("d-none", !operation.message);
    }
  }

  function showAppliance(appliance) {
    setBadge(document.getElementById("appliance-state-" + appliance.id), appliance.state, appliance.state_label);
    if (appliance.engine_version) setText(document.getElementById("appliance-engine-" + appliance.id), appliance.engine_version);
    if (appliance.last_seen) setText(document.getElementById("appliance-seen-" + appliance.id), "just now");
  }

  const FORBIDDEN = 4403;
  const HANDLERS = {"fleet.item": showItem, "fleet.operation": showOperation, "fleet.appliance": showAppliance};

  // A dropped socket is opened again (1 s, doubling to 30 s); on joining, the server sends the states
  // of running and recent operations, so the page catches up with what it missed meanwhile.
  function watchFleet(delay) {
    if (!document.querySelector("[data-fleet-live]") || !window.WebSocket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/ws/appliances/");
    socket.addEventListener("message", function (event) {
      delay = 1000;
      const message = JSON.parse(event.data);
      const handler = HANDLERS[message.event];
      if (handler) handler(message.data);
    });
    socket.addEventListener("close", function (event) {
      if (event.code === FORBIDDEN) return;  // no role: reconnecting cannot help
      setTimeout(function () { watchFleet(Math.min(delay * 2, 30000)); }, delay * (0.75 + Math.random() / 2));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-appliance-form]").forEach(function (form) {
      showAddressFields(form);
      form.addEventListener("change", function (event) {
        if (event.target.name === "addressing") showAddressFields(form);
      });
    });
    watchFleet(1000);
  });
})();
