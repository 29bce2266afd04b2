// A little progressive enhancement; the page works without it.
(function () {
  "use strict";
  document.querySelectorAll("[data-print]").forEach(function (el) {
    el.addEventListener("click", function () { window.print(); });
  });
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.setAttribute("open", ""); });
  });
  var focus = document.getElementById("focus");
  if (focus) {
    focus.focus({ preventScroll: true });
  }
  document.body.setAttribute("data-ready", "1");
})();
