// Live updates for troc's pages (progressive: every page works without this).
// The node sends one server-sent event per stored entry; the page then fetches
// itself again and swaps in the parts marked data-live, leaving forms alone.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]');
  if (!csrf || !csrf.content || !window.EventSource) {
    return;
  }
  var timer = null;
  var busy = false;
  var again = false;

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var name = old.getAttribute("data-live");
          var next = fresh.querySelector('[data-live="' + name + '"]');
          if (next && next.innerHTML !== old.innerHTML) {
            old.replaceWith(document.importNode(next, true));
          }
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource("/events");
  source.addEventListener("entry", function () {
    // Entries often come in bursts (a sync): one refresh for a burst.
    if (timer === null) {
      timer = setTimeout(function () {
        timer = null;
        refresh();
      }, 80);
    }
  });
  source.addEventListener("open", function () {
    // Entries stored between this page's rendering and the subscription (or
    // while reconnecting) sent no event: look once.
    refresh();
    document.body.setAttribute("data-live-ready", "yes");
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
