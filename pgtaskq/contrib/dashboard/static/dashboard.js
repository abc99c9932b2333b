// pgtaskq dashboard: refresh the page's content in place, confirm destructive actions.
// Plain script, no build step, no library: the server renders everything, this only
// swaps <main> for a freshly rendered one every few seconds (not while a form has focus).
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  var url = body.getAttribute("data-refresh-url");

  function confirmActions(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  function refresh() {
    var active = document.activeElement;
    if (active && active.form) { return schedule(); }  // someone is using a form
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.text();
      })
      .then(function (html) {
        var main = document.getElementById("content");
        main.innerHTML = html;
        main.removeAttribute("data-stale");
        confirmActions(main);
      })
      .catch(function () {
        document.getElementById("content").setAttribute("data-stale", "true");
      })
      .then(schedule);
  }

  function schedule() {
    window.setTimeout(refresh, seconds * 1000);
  }

  confirmActions(document);
  if (seconds > 0 && url && window.fetch) { schedule(); }
})();
