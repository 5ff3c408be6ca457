"""Tools the verifiers and strategies share that know nothing of problems or models: running
a process with a deadline (:mod:`reasoner.tools.process`)."""
