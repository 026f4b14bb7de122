"""A second example application: a shop's catalogue, with its own models and migrations.

Not bulkops code: it stands for a team's application that points bulkops at
its tables with ``BULKOPS_TARGETS=example_shop.bulk:targets``.
"""
