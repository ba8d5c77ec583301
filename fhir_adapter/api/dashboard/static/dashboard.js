// fhir-adapter dashboard: optional enhancements of the selector form. The page works without this
// file (plain GET forms); nothing is submitted before the user presses "Show" (WCAG 3.2.2).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var period = document.getElementById("sel-period");
  var quarter = document.getElementById("sel-quarter");
  var measure = document.getElementById("sel-measure");
  var year = document.getElementById("sel-year");

  // The quarter matters only for quarterly and rolling 12-month periods.
  function syncQuarter() {
    if (period && quarter) {
      quarter.disabled = period.value === "year";
    }
  }

  // Offer only the selected measure's measurement years (kept when still offered).
  function syncYears() {
    if (!measure || !year) {
      return;
    }
    var option = measure.options[measure.selectedIndex];
    var years = (option.getAttribute("data-years") || "").split(" ").filter(Boolean);
    if (!years.length) {
      return;
    }
    var current = year.value;
    while (year.firstChild) {
      year.removeChild(year.firstChild);
    }
    years.forEach(function (y) {
      var item = document.createElement("option");
      item.value = y;
      item.textContent = y;
      year.appendChild(item);
    });
    year.value = years.indexOf(current) >= 0 ? current : years[years.length - 1];
  }

  if (period) {
    period.addEventListener("change", syncQuarter);
  }
  if (measure) {
    measure.addEventListener("change", syncYears);
  }
  syncQuarter();
  syncYears();
});
