// tutor_times dashboard: the browser's time zone by default, sortable tables, and the
// "marking now" panel kept fresh. No dependencies; the page works without it.
(function () {
  "use strict";

  // Without a tz in the URL the server answered in UTC: ask again in the browser's own zone,
  // and keep it in the URL so the view can be shared as it is seen.
  function useBrowserZone() {
    var form = document.querySelector(".tt-pickers");
    if (!form || form.dataset.hasTz !== "no") return false;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var known = document.querySelector('#tt-zones option[value="' + zone + '"]');
    if (!zone || !known || zone === "UTC") return false;
    var url = new URL(window.location.href);
    url.searchParams.set("tz", zone);
    window.location.replace(url.toString());
    return true;
  }

  function cellValue(row, index) {
    var cell = row.cells[index];
    var raw = cell ? cell.dataset.value : "";
    var n = Number(raw);
    return raw !== "" && raw !== undefined && !isNaN(n) ? n : raw || "";
  }

  function sortBy(button) {
    var th = button.closest("th");
    var table = button.closest("table");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = button.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.filter.call(body.rows, function (r) {
      return !r.classList.contains("tt-none");
    });
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x === y) return 0;
      if (x === "") return 1; // no value last, either way
      if (y === "") return -1;
      return (x < y ? -1 : 1) * (ascending ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll(".tt-sort").forEach(function (other) {
      other.removeAttribute("aria-sort");
    });
    button.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function liveItem(session, clock, names) {
    var li = document.createElement("li");
    li.dataset.marker = session.marker_id;
    li.dataset.sessionId = session.id;
    var name = names[session.marker_id] || "#" + session.marker_id;
    li.textContent = name + " · since " +
      clock.format(new Date(session.start_time)) + " · " + session.duration_minutes + " min";
    return li;
  }

  function refreshLive(panel, clock, names) {
    var list = panel.querySelector(".tt-live-list");
    var status = panel.querySelector("[data-live-status]");
    return fetch(panel.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        var live = data.sessions.filter(function (s) { return s.active; });
        var items = live.map(function (s) { return liveItem(s, clock, names); });
        if (!items.length) {
          var none = document.createElement("li");
          none.className = "tt-none";
          none.textContent = "Nobody is marking right now.";
          items = [none];
        }
        list.replaceChildren.apply(list, items);
        status.textContent = "Updated " + clock.format(new Date()) + ".";
      })
      .catch(function (error) {
        status.textContent = "Could not refresh (" + error.message + "); trying again.";
      });
  }

  function startLive() {
    var panel = document.getElementById("tt-live");
    if (!panel) return;
    var zone = document.querySelector("[data-tz]").textContent;
    var clock = new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit" });
    var every = Number(panel.dataset.every) || 5000;
    // the names the page was rendered with; a tutor who starts later is shown by number
    var names = JSON.parse(panel.dataset.names || "{}");
    var tick = function () {
      refreshLive(panel, clock, names).then(function () { window.setTimeout(tick, every); });
    };
    window.setTimeout(tick, every);
  }

  if (useBrowserZone()) return;
  document.querySelectorAll(".tt-sort").forEach(function (button) {
    button.addEventListener("click", function () { sortBy(button); });
  });
  startLive();
})();
