"""Git for the loop: the research branch in the user's checkout, and a workspace per worker."""
