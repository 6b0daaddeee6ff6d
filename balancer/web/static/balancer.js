// The WebUI's one script besides htmx and its morph extension: say so when the appliance cannot
// be reached or does not answer in time, and since when the page has not been updated; stop
// saying so once it answers again. (A file, not inline: the Content-Security-Policy forbids
// inline script.)
(function () {
  "use strict";

  // Every poll (a request sent with X-Balancer-Poll: System Overview's and Reports' refresh,
  // every page's heartbeat) waits this long at most, so that a hung appliance shows the banner
  // as a stopped one does.
  var POLL_TIME_LIMIT = 5000; // ms
  var answered = new Date(); // the page itself was an answer

  // As the pages write a moment: 2026-06-19 08:30:01 UTC.
  function moment(date) {
    return date.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function unreachable(shown) {
    var banner = document.getElementById("unreachable");
    if (!banner) {
      return;
    }
    if (shown && banner.hidden) {
      document.getElementById("unreachable-since").textContent = moment(answered);
    }
    banner.hidden = !shown;
  }

  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.headers["X-Balancer-Poll"]) {
      event.detail.timeout = POLL_TIME_LIMIT;
    }
  });
  document.addEventListener("htmx:sendError", function () {
    unreachable(true);
  });
  document.addEventListener("htmx:timeout", function () {
    unreachable(true);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      answered = new Date();
      unreachable(false);
    }
  });
  // A refusal (422) is a page part that says why, in the operator's words: show it where the
  // answer goes, as a plain form's refusal is shown.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
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

// A form is not sent while a box it needs ticked (marked data-tick-first with the reason) is
// not: focus goes to the box and the reason shows beside it. The server refuses such a form too,
// but its answer comes back without the password typed (it is never sent back), and Enter in
// that field before the box was ticked cost the operator the password and another try.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var box = event.target.querySelector("input[data-tick-first]:not(:checked)");
    if (!box) {
      return;
    }
    event.preventDefault();
    var id = box.id + "-error";
    var said = document.getElementById(id);
    if (!said) {
      said = document.createElement("p");
      said.className = "field-error";
      said.id = id;
      box.closest(".control").appendChild(said);
    }
    said.textContent = box.getAttribute("data-tick-first");
    box.setAttribute("aria-invalid", "true");
    box.setAttribute("aria-describedby", id);
    box.closest(".field").classList.add("invalid");
    box.focus();
  });
})();
