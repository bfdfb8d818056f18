// The portal's few behaviours in the browser. Every page works without them (plain links and forms);
// with them: the job list refreshes in place, a job page follows the job's event stream, a log follows.
(function () {
  "use strict";
  var csrf = document.body.getAttribute("data-csrf") || "";

  document.body.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf;
  });

  function swap(url, selector) {
    if (!window.htmx || !document.querySelector(selector)) return Promise.resolve();
    return window.htmx.ajax("GET", url, { target: selector, swap: "outerHTML" });
  }

  // Job list: refresh the table every few seconds, unless the user is selecting rows or typing in it.
  function listRefresh() {
    var table = document.getElementById("job-table");
    if (!table) return;
    var seconds = parseInt(table.getAttribute("data-refresh-every") || "5", 10);
    setInterval(function () {
      var current = document.getElementById("job-table");
      if (!current || document.hidden) return;
      if (current.querySelector("input[type=checkbox]:checked")) return;
      if (current.contains(document.activeElement) && document.activeElement !== document.body) return;
      swap(current.getAttribute("data-refresh"), "#job-table");
    }, seconds * 1000);
  }

  // Job page: the job's Server-Sent Events (relayed by the portal) say when to re-render the live part.
  function jobStream() {
    var live = document.getElementById("job-live");
    if (!live || live.getAttribute("data-final") || !window.EventSource) return;
    var source = new EventSource(live.getAttribute("data-stream"));
    var url = live.getAttribute("data-live");
    var pending = null;
    function refresh() {
      if (pending) return;
      pending = setTimeout(function () {
        pending = null;
        swap(url, "#job-live");
      }, 250);
    }
    source.addEventListener("job", refresh);
    source.addEventListener("task", refresh);
    source.addEventListener("end", function () {
      source.close();
      clearTimeout(pending);
      pending = null;
      swap(url, "#job-live");
    });
  }

  // Log view: "Follow live" re-reads the log every two seconds and keeps the end in view.
  function logFollow() {
    var box = document.getElementById("follow");
    var log = document.getElementById("log");
    if (!box || !log) return;
    var timer = null;
    function tick() {
      fetch(box.getAttribute("data-source"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (text === null || text === log.textContent) return;
          var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.textContent = text;
          if (atEnd || box.checked) log.scrollTop = log.scrollHeight;
        });
    }
    box.addEventListener("change", function () {
      if (box.checked) {
        tick();
        timer = setInterval(tick, 2000);
      } else {
        clearInterval(timer);
      }
    });
  }

  listRefresh();
  jobStream();
  logFollow();
})();
