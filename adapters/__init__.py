"""trackgate.adapters: destinations (KISSmetrics, Matomo, webhooks, the local store), framework glue and
drop-in facades for pytracking, py-KISSmetrics and the Kameleoon SDK."""
