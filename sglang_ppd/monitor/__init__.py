"""The live terminal dashboard of a running router: a pure render function of its ``/stats``
snapshot (:mod:`.render`) and the rich ``Live`` loop that polls it (:mod:`.live`)."""
