"""A Flower app that runs any fedsoft experiment (see :mod:`fedsoft.app`)."""
