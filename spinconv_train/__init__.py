"""spinconv_train: an OCP-style training framework built around SpinConv."""

__version__ = "0.1.0"
