// Backstage dashboard: the only script. Live refresh of the overview (the
// server renders the HTML fragment, chart included) and "select all" on the
// dead-letters page. No framework, no build step, nothing fetched elsewhere.
(function () {
  "use strict";
  var box = document.getElementById("overview");
  var banner = document.getElementById("live-banner");
  var every = parseFloat(document.body.getAttribute("data-refresh") || "2") * 1000;

  function show(text) {
    if (!banner) return;
    banner.textContent = text || "";
    banner.classList.toggle("hidden", !text);
  }

  function refresh() {
    fetch(box.getAttribute("data-src"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (resp) {
        if (resp.ok) return resp.text().then(function (html) { box.innerHTML = html; show(""); });
        return resp.json().then(function (body) {
          show("Redis is unreachable: " + (body.error || resp.status) + ". Retrying…");
        }, function () { show("The dashboard answered " + resp.status + ". Retrying…"); });
      }, function () { show("The dashboard is unreachable. Retrying…"); })
      .then(function () { setTimeout(refresh, every); });
  }

  if (box) setTimeout(refresh, every);

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      var boxes = document.querySelectorAll("input.pick");
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = all.checked;
    });
  }
})();
