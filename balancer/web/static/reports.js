// Reports: drag across a graph to zoom into that time. The span dragged is written into the
// From / To form above the graphs, which is then sent, so the page answered is the one the form
// gives without script (the server draws every graph of that span). A click without a drag
// still follows the graph's link to the next finer range. (A file, not inline: the
// Content-Security-Policy forbids inline script.)
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var LEAST_DRAG = 4; // viewBox units: less is a click, not a drag

  // "2026-12-04T02:10", as <input type="datetime-local"> writes a time; UTC, as the page.
  function fieldTime(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 16);
  }

  function zoomable(svg) {
    var box = svg.viewBox.baseVal;
    var left = Number(svg.dataset.left);
    var right = Number(svg.dataset.right);
    var start = Number(svg.dataset.start);
    var end = Number(svg.dataset.end);
    var from = null; // where the drag began, in viewBox units
    var band = null;
    var dragged = false;

    function place(event) {
      var rect = svg.getBoundingClientRect();
      var x = ((event.clientX - rect.left) * box.width) / rect.width;
      return Math.min(Math.max(x, left), right);
    }

    function time(x) {
      return start + ((x - left) / (right - left)) * (end - start);
    }

    function show(to) {
      band.setAttribute("x", Math.min(from, to));
      band.setAttribute("width", Math.abs(to - from));
    }

    function move(event) {
      show(place(event));
    }

    function release(event) {
      document.removeEventListener("mousemove", move);
      document.removeEventListener("mouseup", release);
      var to = place(event);
      band.remove();
      if (Math.abs(to - from) < LEAST_DRAG) {
        return; // a click: the link does what a click does
      }
      dragged = true;
      var since = Math.floor(time(Math.min(from, to)) / 60) * 60;
      var until = Math.max(Math.ceil(time(Math.max(from, to)) / 60) * 60, since + 60);
      var form = document.getElementById("span");
      form.elements.from.value = fieldTime(since);
      form.elements.to.value = fieldTime(until);
      form.requestSubmit();
    }

    svg.setAttribute("cursor", "crosshair");
    svg.addEventListener("mousedown", function (event) {
      if (event.button !== 0) {
        return;
      }
      event.preventDefault(); // no dragging of the link, no selecting of the text
      from = place(event);
      band = document.createElementNS(SVG, "rect");
      band.setAttribute("class", "zoom-band");
      band.setAttribute("y", 0);
      band.setAttribute("height", box.height);
      band.setAttribute("fill", "#1f5fa8");
      band.setAttribute("fill-opacity", "0.2");
      band.setAttribute("stroke", "#1f5fa8");
      show(from);
      svg.appendChild(band);
      document.addEventListener("mousemove", move);
      document.addEventListener("mouseup", release);
    });
    // The click that ends a drag is not a click on the graph's link.
    svg.addEventListener("click", function (event) {
      if (dragged) {
        event.preventDefault();
        dragged = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!document.getElementById("span")) {
      return;
    }
    document.querySelectorAll("figure.graph svg.graph[data-start]").forEach(zoomable);
  });
})();
