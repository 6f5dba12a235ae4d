"""The runtime: a model read once (load.py), forward passes run with an op set on some cores within
a batch budget (runner.py), and the public classes built on them (CrossEncoder, SentenceEncoder)."""
