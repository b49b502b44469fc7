"""triosip: a SIP proxy on trio whose routes run async work that a transaction can cancel."""

__version__ = "0.1.0"
