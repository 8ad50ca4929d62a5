// Batchboard's only script: local times, live durations, copy buttons, pausing polls in hidden tabs, the action
// panel's focus, filters that apply at once, and how fresh the live data is.
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

  // Copy buttons: the clipboard API where there is one (HTTPS or localhost), else the text is selected so that
  // Ctrl+C copies it (plain-HTTP hosts have no clipboard API).
  function copyText(button) {
    var text = button.getAttribute("data-copy");
    function done(label) {
      button.classList.add("copied");
      button.setAttribute("data-state", label);
      var note = button.querySelector(".copy-note") || button.appendChild(document.createElement("span"));
      note.className = "copy-note";
      note.textContent = label;
      setTimeout(function () { button.classList.remove("copied"); note.textContent = ""; }, 1500);
    }
    function select() {
      var target = button.parentElement.querySelector("bdi") || button.parentElement;
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done("Selected: press Ctrl+C");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, select);
    } else {
      select();
    }
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

    // The action panel (cancel confirmation) is a small dialog: focus moves into it, Esc closes it, and focus
    // goes back to what opened it (or to the status, when that control is gone after the action).
    var opener = null;
    function closePanel() {
      var panel = document.getElementById("action-panel");
      if (!panel || !panel.firstElementChild) return;
      panel.innerHTML = "";
      returnFocus();
    }
    function returnFocus() {
      var back = opener && document.body.contains(opener) ? opener : document.getElementById("batch-status");
      opener = null;
      if (back) {
        if (!back.matches("a, button, input, select, textarea")) back.setAttribute("tabindex", "-1");
        back.focus();
      }
    }
    document.body.addEventListener("htmx:beforeRequest", function (event) {
      if (event.detail.target && event.detail.target.id === "action-panel" && !opener) {
        opener = document.activeElement;
      }
    });
    // After settling, not after the swap: by then htmx has wired the panel's form, so an Enter pressed as soon
    // as the focus lands posts through htmx instead of submitting the plain form.
    document.body.addEventListener("htmx:afterSettle", function (event) {
      if (event.detail.target.id !== "action-panel") return;
      var dialog = event.detail.target.querySelector("[data-panel]");
      if (dialog) {
        var first = dialog.querySelector("button:not([disabled]), a[href]");
        (first || dialog).focus();
      } else {
        returnFocus();  // the panel closed: the action answered
      }
    });
    document.addEventListener("keydown", function (event) {
      var panel = document.getElementById("action-panel");
      if (event.key === "Escape" && panel && panel.contains(document.activeElement)) closePanel();
    });

    document.body.addEventListener("click", function (event) {
      var copy = event.target.closest("[data-copy]");
      if (copy) copyText(copy);
      var close = event.target.closest("[data-close-panel]");
      var panel = document.getElementById("action-panel");
      if (close && panel && panel.contains(close)) {
        event.preventDefault();
        closePanel();
      }
    });

    // Filters: a checkbox or select applies at once (the Apply button stays for pages without script), and
    // empty fields are left out of the URL.
    document.body.addEventListener("change", function (event) {
      var form = event.target.closest("form[data-autosubmit]");
      if (form && event.target.matches("input[type=checkbox], select")) form.requestSubmit();
    });
    document.body.addEventListener("submit", function (event) {
      if (!event.target.matches("form[data-autosubmit]")) return;
      event.target.querySelectorAll("input, select").forEach(function (field) {
        if (field.name && field.value === "" && !field.disabled) field.disabled = true;
      });
    });

    // On a phone the filters start folded behind their "Filters (n)" toggle.
    if (window.matchMedia("(max-width: 700px)").matches) {
      document.querySelectorAll("details[data-fold]").forEach(function (el) { el.open = false; });
    }

    // "updated 4 s ago" near a live table, or "paused" while the tab is hidden.
    var lastAnswer = Date.now();
    document.body.addEventListener("htmx:afterRequest", function (event) {
      if (event.detail.elt.hasAttribute("data-poll") && event.detail.successful) lastAnswer = Date.now();
    });
    function freshness() {
      document.querySelectorAll("[data-freshness]").forEach(function (el) {
        el.textContent = document.hidden ? "paused" : "updated " + span((Date.now() - lastAnswer) / 1000) + " ago";
      });
    }
    freshness();
    setInterval(freshness, 1000);
    document.addEventListener("visibilitychange", freshness);
  });
})();
