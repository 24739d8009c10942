// Run and task pages follow their progress live (jobs.consumers): states, progress bars, logs.
// The socket resumes after the last seq seen of each task, so a reconnecting page misses nothing;
// an event seen already is dropped, one after a gap asks for the missing ones first.
(function () {
  "use strict";

  const COLORS = {succeeded: "success", failed: "danger", partial: "warning", running: "info", cancelled: "dark"};
  const RUN_LOG_KINDS = ["log", "phase", "error"];
  const UNITS = ["KB", "MB", "GB", "TB", "PB"];
  const CLOSE_FOR_GOOD = [4403, 4404];  // no role, or no such run or task: reconnecting cannot help

  function size(bytes) {
    if (bytes < 1024) return bytes + (bytes === 1 ? "\u00a0byte" : "\u00a0bytes");
    let value = bytes / 1024, unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(1) + "\u00a0" + UNITS[unit];
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function badge(state, label) {
    const node = element("span", "badge text-bg-" + (COLORS[state] || "secondary"), label);
    node.dataset.state = state;
    return node;
  }

  function clock(iso) {
    const when = iso ? new Date(iso) : new Date();
    return when.toTimeString().slice(0, 8);
  }

  // One line for an event, as jobs.views.backup.describe words it.
  function describe(kind, data) {
    data = data || {};
    if (kind === "phase") return [data.phase, data.message].filter(Boolean).join(": ");
    if (kind === "progress") {
      const done = Number(data.done) || 0, total = Number(data.total) || 0, mib = 1 << 20;
      const share = total ? " (" + Math.floor(100 * done / total) + " %)" : "";
      const rate = data.rate ? ", " + (data.rate / mib).toFixed(1) + " MiB/s" : "";
      return (done / mib).toFixed(1) + " of " + (total / mib).toFixed(1) + " MiB" + share + rate;
    }
    if ((kind === "log" || kind === "error") && "message" in data) return String(data.message);
    const shown = Object.keys(data).sort().filter(function (key) { return typeof data[key] !== "object"; });
    const text = shown.map(function (key) { return key + ": " + data[key]; }).join(", ");
    return kind === "result" ? text || "Finished." : text;
  }

  // The markup of templates/jobs/_task_progress.html.
  function progress(task) {
    const cell = document.createDocumentFragment();
    const active = task.state === "queued" || task.state === "running";
    if (task.bytes_total) {
      const pct = task.state === "succeeded" ? 100 : Math.min(100, Math.floor(100 * task.bytes_done / task.bytes_total));
      const bar = element("div", "progress");
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-label", "Progress of " + task.vm_name);
      bar.setAttribute("aria-valuenow", pct);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      const fill = element("div", "progress-bar", pct + "%");
      fill.classList.toggle("bg-danger", task.state === "failed");
      fill.classList.toggle("bg-success", task.state === "succeeded");
      fill.style.width = pct + "%";
      bar.appendChild(fill);
      let text = size(task.bytes_done) + " of " + size(task.bytes_total);
      if (task.rate && active) text += ", " + size(task.rate) + "/s";
      if (task.eta && active) text += ", " + Math.round(task.eta) + " s left";
      cell.append(bar, element("div", "small text-secondary", text));
    } else {
      cell.appendChild(element("span", "small text-secondary", task.state === "succeeded" ? "done" : "—"));
    }
    return cell;
  }

  function mode(task, limit) {
    if (!task.mode) return document.createTextNode("—");
    const cell = document.createDocumentFragment();
    const label = element("span", "", task.mode_label);
    label.title = task.mode_reason || "";
    const reason = task.mode_reason || "";
    cell.append(label, element("div", "small text-secondary",
                               limit && reason.length > limit ? reason.slice(0, limit - 1) + "…" : reason));
    return cell;
  }

  function fill(node, content) {
    if (!node) return;
    node.replaceChildren(content);
  }

  function showAlert(node, state, message, code) {
    if (!node) return;
    const color = {succeeded: "success", failed: "danger", partial: "warning"}[state] || "info";
    node.className = "alert alert-" + color;
    node.replaceChildren(document.createTextNode(message || ""));
    if (code) node.append(" ", element("span", "small text-secondary", "(" + code + ")"));
    node.hidden = !message;
  }

  // A focused Cancel that goes away hands the focus to the first link of its row or page head (Reload),
  // so a keyboard user does not fall back to the top of the page.
  function removeCancel(form) {
    const place = form.contains(document.activeElement) && form.closest("tr, .page-head");
    form.remove();
    const link = place && place.querySelector("a[href]");
    if (link) link.focus();
  }

  function hideCancel(scope) {
    scope.querySelectorAll("[data-live-cancel]").forEach(removeCancel);
  }

  // One page: the task rows it shows (elements with data-task), its socket, and what it has seen.
  function LivePage(root, path, onRun) {
    this.root = root;
    this.path = path;
    this.onRun = onRun;
    this.tasks = {};
    this.lastSeq = {};
    this.asked = {};
    this.delay = 1000;
    this.ended = root.hasAttribute("data-ended");
    const page = this;
    document.querySelectorAll("[data-task]").forEach(function (row) {
      const id = row.dataset.task;
      page.lastSeq[id] = Number(row.dataset.lastSeq) || 0;
      page.tasks[id] = {id: Number(id), row: row, vm_name: row.dataset.vmName, state: row.dataset.state,
                        bytes_done: Number(row.dataset.bytesDone) || 0,
                        bytes_total: Number(row.dataset.bytesTotal) || 0, rate: 0, eta: null};
    });
  }

  LivePage.prototype.open = function () {
    if (this.ended || !window.WebSocket) return;
    const page = this;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + this.path);
    this.socket = socket;
    socket.addEventListener("open", function () {
      page.asked = {};
      page.send({resume: page.lastSeq});
    });
    socket.addEventListener("message", function (event) {
      page.delay = 1000;
      const message = JSON.parse(event.data);
      if (message.event === "task.event") page.event(message.data);
      else if (message.event === "task.state") page.taskState(message.data);
      else if (message.event === "run.state") page.runState(message.data);
    });
    socket.addEventListener("close", function (event) {
      if (page.ended || CLOSE_FOR_GOOD.indexOf(event.code) >= 0) return;
      setTimeout(function () { page.open(); }, page.delay * (0.75 + Math.random() / 2));
      page.delay = Math.min(page.delay * 2, 30000);
    });
  };

  LivePage.prototype.send = function (message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  };

  LivePage.prototype.event = function (event) {
    const id = String(event.task), task = this.tasks[id];
    if (!task) return;
    const last = this.lastSeq[id] || 0;
    if (event.seq <= last) return;  // seen already (joined before the replay)
    if (event.seq > last + 1) {  // some were lost: ask for them, this one comes again
      if (!this.asked[id]) {
        this.asked[id] = true;
        const resume = {};
        resume[id] = last;
        this.send({resume: resume});
      }
      return;
    }
    this.lastSeq[id] = event.seq;
    this.asked[id] = false;
    const data = event.data || {};
    if (event.kind === "progress") {
      task.bytes_done = Number(data.done) || 0;
      task.bytes_total = Number(data.total) || 0;
      task.rate = data.rate;
      task.eta = data.eta;
      fill(task.row.querySelector("[data-field=progress]"), progress(task));
    } else if (event.kind === "phase") {
      fill(task.row.querySelector("[data-field=phase]"), document.createTextNode(data.phase || "—"));
    }
    this.logLine(task, event);
  };

  LivePage.prototype.taskState = function (state) {
    const task = this.tasks[String(state.id)];
    if (!task) return;
    Object.assign(task, state);
    const row = task.row;
    row.dataset.state = state.state;
    fill(this.stateCell(row), badge(state.state, state.state_label));
    const appliance = row.querySelector("[data-field=appliance]");
    if (appliance && appliance.textContent.trim() !== (state.appliance_name || "—")) {
      fill(appliance, document.createTextNode(state.appliance_name || "—"));
    }
    fill(row.querySelector("[data-field=mode]"), mode(state, this.onRun ? 120 : 0));
    fill(row.querySelector("[data-field=phase]"), document.createTextNode(state.phase || "—"));
    fill(row.querySelector("[data-field=progress]"), progress(task));
    const message = row.querySelector("td[data-field=message]");
    if (message) {
      message.textContent = state.message;
      message.classList.toggle("text-danger", state.state === "failed");
    }
    if (!state.active) hideCancel(this.onRun ? row : document);
    if (!this.onRun) this.taskEnded(state);
  };

  LivePage.prototype.runState = function (run) {
    const wrapper = document.getElementById("run-state");
    if (wrapper) wrapper.replaceChildren(badge(run.state, run.state_label));
    const summary = document.getElementById("run-summary");
    if (summary) {
      const c = run.counts;
      let text = run.tasks + " in this run: " + c.succeeded + " succeeded, " + c.failed + " failed, " +
        c.running + " running, " + c.queued + " queued";
      if (c.cancelled) text += ", " + c.cancelled + " cancelled";
      if (run.bytes_total) text += "; " + size(run.bytes_done) + " of " + size(run.bytes_total) + " read";
      summary.textContent = text;
    }
    showAlert(document.getElementById("run-message"), run.state, run.message);
    if (run.cancel_requested || !run.active) {
      const cancel = document.querySelector(".page-head [data-live-cancel]");
      if (cancel) removeCancel(cancel);
    }
    if (!run.active) {
      this.ended = true;
      hideCancel(document);
    }
  };

  // The task page: its state badge, message and end.
  LivePage.prototype.taskEnded = function (state) {
    showAlert(document.getElementById("task-message"), state.state, state.message, state.error_code);
    if (state.cancel_requested) hideCancel(document);
    if (!state.active) this.ended = true;
  };

  LivePage.prototype.stateCell = function (row) {
    return this.onRun ? row.querySelector("[data-field=state]") : document.getElementById("task-state");
  };

  LivePage.prototype.logLine = function (task, event) {
    if (this.onRun) {
      if (RUN_LOG_KINDS.indexOf(event.kind) < 0) return;
      const log = document.getElementById("run-log");
      if (!log) return;
      const level = (event.data || {}).level;
      const line = element("li", event.kind === "error" || level === "error" ? "text-danger" :
        level === "warning" ? "text-warning-emphasis" : event.kind === "phase" ? "fw-semibold" : "");
      const time = element("time", "", clock(event.time));
      if (event.time) time.dateTime = event.time;
      line.append(time, " " + task.vm_name + ": " + describe(event.kind, event.data));
      append(log, line, Number(log.dataset.maxLines) || 500);
    } else {
      const log = document.getElementById("task-log");
      if (!log) return;
      const level = (event.data || {}).level;
      const row = element("tr", "event-" + event.kind + (event.kind === "error" || level === "error" ? " table-danger" :
        level === "warning" ? " table-warning" : ""));
      row.append(element("td", "num", String(event.seq)), element("td", "text-nowrap small", clock(event.time)),
                 element("td", "", event.kind), element("td", "small", describe(event.kind, event.data)));
      const section = log.closest("section");
      section.querySelectorAll("[hidden]").forEach(function (hidden) { hidden.hidden = false; });
      section.querySelectorAll("[data-empty]").forEach(function (empty) { empty.remove(); });
      append(log, row, 0);
      if (event.kind === "result") {
        fill(document.querySelector("[data-field=result]"),
             element("div", "small", describe(event.kind, event.data)));
      }
    }
  };

  // Append a line, keep at most `cap` (0: all), and follow the bottom unless the reader scrolled up.
  function append(log, line, cap) {
    const box = log.closest(".overflow-auto") || log;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const empty = log.querySelector("[data-empty]");
    if (empty) empty.remove();
    log.appendChild(line);
    while (cap && log.children.length > cap) log.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const run = document.querySelector("[data-run-live]");
    if (run) new LivePage(run, "/ws/jobs/runs/" + run.dataset.runLive + "/", true).open();
    const task = document.querySelector("[data-task-live]");
    if (task) new LivePage(task, "/ws/jobs/tasks/" + task.dataset.taskLive + "/", false).open();
  });
})();
