// The WebUI's one script besides htmx: say so when the appliance cannot be reached, and stop
// saying so once it answers again. (A file, not inline: the Content-Security-Policy forbids
// inline script.)
(function () {
  "use strict";

  function unreachable(shown) {
    var banner = document.getElementById("unreachable");
    if (banner) {
      banner.hidden = !shown;
    }
  }

  document.addEventListener("htmx:sendError", function () {
    unreachable(true);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      unreachable(false);
    }
  });
})();

// A field's "?" help (a <details class="help">) closes with Escape, and keyboard focus goes back
// to its "?", so the next Tab carries on from the field whose help was read.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") {
      return;
    }
    var open = event.target.closest ? event.target.closest("details.help[open]") : null;
    var all = open ? [open] : document.querySelectorAll("details.help[open]");
    if (!all.length) {
      return;
    }
    for (var i = 0; i < all.length; i++) {
      all[i].open = false;
    }
    all[all.length - 1].querySelector("summary").focus();
    event.preventDefault();
  });
})();
