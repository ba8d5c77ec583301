"""The dashboard behind :mod:`fhir_adapter.api.routes_dashboard`: the selection
(:mod:`.selection`), the panels as data and their cached computations (:mod:`.data`,
:mod:`.work`) and their HTML (:mod:`.render`); ``static/`` holds its stylesheet and script."""
