// vcycle status page: fetch the page's live part again every cycle and swap it in, without a reload.
// No framework, nothing fetched from elsewhere: the page's Content-Security-Policy allows this file only.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  if (!live) { return; }
  var every = Math.max(2, Number(live.dataset.refresh) || 60) * 1000;

  function busy() {  // someone is typing in a filter: do not take it away from them
    var focused = document.activeElement;
    return focused && live.contains(focused) && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName);
  }

  function openDetails() {  // which <details> the reader opened, by position, to keep them open
    return Array.prototype.map.call(live.querySelectorAll("details"), function (d) { return d.open; });
  }

  function refresh() {
    if (busy() || document.hidden) { setTimeout(refresh, every); return; }
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.text();
      })
      .then(function (html) {
        var opened = openDetails();
        live.innerHTML = html;
        live.querySelectorAll("details").forEach(function (d, i) { if (i < opened.length) { d.open = opened[i]; } });
        if (updated) { updated.textContent = "as of " + new Date().toISOString().slice(0, 19).replace("T", " ") + " UTC"; }
        live.dataset.refreshed = String(Number(live.dataset.refreshed || 0) + 1);
        if (updated) { updated.classList.remove("stale"); }
      })
      .catch(function (problem) {
        if (updated) { updated.textContent = "not refreshed: " + problem.message; updated.classList.add("stale"); }
      })
      .finally(function () { setTimeout(refresh, every); });
  }

  setTimeout(refresh, every);
})();
