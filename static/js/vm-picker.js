// The job form's VM picker: ticking a match adds a chip (a hidden input "vms"), a chip's x removes it and
// unticks its match. Without JavaScript the same buttons post the form back ("narrow") and the server does it.
(function () {
  "use strict";

  function chosenList() {
    return document.getElementById("vm-chosen");
  }

  function chipOf(id) {
    const list = chosenList();
    return list && list.querySelector('[data-vm="' + CSS.escape(id) + '"]');
  }

  function makeChip(id, name) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.dataset.vm = id;
    chip.append(name);
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "vms";
    input.value = id;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "btn btn-link btn-sm p-0 ms-1 align-baseline";
    remove.dataset.unchooseVm = "";
    remove.setAttribute("aria-label", "Remove " + name);
    remove.innerHTML = '<i class="bi bi-x" aria-hidden="true"></i>';
    chip.append(input, remove);
    return chip;
  }

  // Chips added by "select all" may repeat chosen VMs; ticks follow the chips.
  function tidy() {
    const list = chosenList();
    if (!list) return;
    const seen = new Set();
    list.querySelectorAll("[data-vm]").forEach(function (chip) {
      if (seen.has(chip.dataset.vm)) chip.remove();
      else seen.add(chip.dataset.vm);
    });
    list.querySelectorAll("[data-unchoose-vm]").forEach(function (button) { button.type = "button"; });
    document.querySelectorAll("[data-vm-choice]").forEach(function (box) { box.checked = seen.has(box.value); });
  }

  document.addEventListener("change", function (event) {
    const box = event.target.closest("[data-vm-choice]");
    const list = chosenList();
    if (!box || !list) return;
    const chip = chipOf(box.value);
    if (box.checked && !chip) list.append(makeChip(box.value, box.dataset.vmName));
    if (!box.checked && chip) chip.remove();
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-unchoose-vm]");
    if (!button) return;
    event.preventDefault();
    const chip = button.closest("[data-vm]");
    // The focus goes on to a neighbour chip (or the search box), not back to the top of the page.
    const neighbour = chip.nextElementSibling || chip.previousElementSibling;
    const next = (neighbour && neighbour.querySelector("[data-unchoose-vm]")) || document.getElementById("vm-search");
    chip.remove();
    tidy();
    if (next) next.focus();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && event.target.id === "vm-search") event.preventDefault();  // it searches as you type
  });

  document.addEventListener("DOMContentLoaded", tidy);
  document.addEventListener("htmx:afterSettle", tidy);
})();
