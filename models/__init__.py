"""Models of the cerebellum: the seed paper's rate model and the Brian2 spiking network."""
