// The catch-and-release page: ticks the countdowns every second and swaps in fresh
// content from /cr/live every 5 s. Without it the page reloads itself (noscript refresh).
(function () {
  'use strict';
  var live = document.getElementById('live');
  var status = document.getElementById('live-status');
  if (!live) { return; }
  var skew = 0;
  var failures = 0;
  function left(s) {
    if (s <= 0) { return 'now'; }
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, x = s % 60;
    if (d > 0) { return d + 'd ' + h + 'h'; }
    if (h > 0) { return h + 'h ' + m + 'm'; }
    if (m > 0) { return m + 'm ' + x + 's'; }
    return x + 's';
  }
  function sync() {
    var n = live.querySelector('[data-now]');
    if (n) { skew = parseFloat(n.getAttribute('data-now')) - Date.now() / 1000; }
  }
  function tick() {
    var now = Date.now() / 1000 + skew;
    var els = live.querySelectorAll('[data-until]');
    for (var i = 0; i < els.length; i++) {
      els[i].textContent = left(Math.floor(parseFloat(els[i].getAttribute('data-until')) - now));
    }
  }
  function say(text) { if (status) { status.textContent = text; } }
  function refresh() {
    if (document.hidden) { return; }
    fetch(live.getAttribute('data-src'), { credentials: 'same-origin', cache: 'no-store', redirect: 'error' })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (text) {
        live.innerHTML = text;
        failures = 0;
        sync();
        tick();
        say('Live: updated ' + new Date().toISOString().slice(11, 19) + ' UTC, every 5 s.');
      })
      .catch(function (e) {
        failures += 1;
        say('Live refresh failed (' + e.message + '); ' + (failures > 3 ? 'reload the page.' : 'retrying.'));
      });
  }
  sync();
  tick();
  say('Live: updates every 5 s.');
  setInterval(tick, 1000);
  setInterval(refresh, 5000);
})();
