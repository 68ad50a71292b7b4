"""Sentences the member must read where it types (CLI help and prompts, the
web form): one copy of each, imported by every face of the node. No imports,
so that ``troc --help`` stays fast."""

__all__ = ["PROFILE_IS_PUBLIC"]

#: A profile is public and permanent (docs/protocol.md §4.4).
PROFILE_IS_PUBLIC = (
    "Everything in your profile is public: every node that follows the community"
    " stores and relays it, for good (a new profile hides the old one from views,"
    " not from the logs). Give a town or district, never an address; publish only"
    " the contact you want all members to see."
)
