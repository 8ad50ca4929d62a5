// Batchboard's only script: local times, live durations, copy buttons, and pausing polls in hidden tabs.
// Everything works without it (times stay in UTC); nothing here needs eval or inline code (strict CSP).
(function () {
  "use strict";

  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
        m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + "s";
  }

  function render(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var diff = (now - at) / 1000;
      if (el.hasAttribute("data-relative")) {
        el.textContent = diff >= 0 ? span(diff) + " ago" : "in " + span(-diff);
      } else if (el.hasAttribute("data-since")) {
        el.textContent = span(diff);
      } else if (el.hasAttribute("data-countdown")) {
        el.textContent = diff <= 0 ? "in " + span(-diff) : "overdue by " + span(diff);
      } else if (el.hasAttribute("data-absolute")) {
        el.textContent = new Date(at).toLocaleString(undefined, {
          year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"});
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    render(document);
    setInterval(function () { render(document); }, 1000);

    document.body.addEventListener("htmx:afterSwap", function (event) { render(event.target); });
    document.body.addEventListener("htmx:oobAfterSwap", function (event) { render(event.target); });

    // A hidden tab does not poll; it refreshes once when it becomes visible again.
    document.body.addEventListener("htmx:beforeRequest", function (event) {
      if (document.hidden && event.detail.elt.hasAttribute("data-poll")) event.preventDefault();
    });
    // Polls say so, so the server does not count them as activity (the session's idle timeout).
    document.body.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt.hasAttribute("data-poll")) event.detail.headers["X-Batchboard-Poll"] = "1";
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) document.body.dispatchEvent(new CustomEvent("batchboard:visible"));
    });

    document.body.addEventListener("click", function (event) {
      var copy = event.target.closest("[data-copy]");
      if (copy && navigator.clipboard) {
        navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
          copy.classList.add("copied");
          setTimeout(function () { copy.classList.remove("copied"); }, 1200);
        });
      }
      var close = event.target.closest("[data-close-panel]");
      var panel = document.getElementById("action-panel");
      if (close && panel && panel.contains(close)) {
        event.preventDefault();
        panel.innerHTML = "";
      }
    });
  });
})();
