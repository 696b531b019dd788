"""The simulator: realistic traffic (``traffic``) and the simulations that
feed it through the ordinary ingest path (``simulations``)."""
