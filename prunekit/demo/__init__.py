"""The embedded demo: training the small AST that ships in ``prunekit/demo_model/``."""
