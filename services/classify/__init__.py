"""Classification tasks, their heads and the models each process serves."""
