"""The one exception type for mistakes a user can fix; CLIs print its message and exit non-zero."""


class UserError(Exception):
  """A bad input (experiment, override, image, checkpoint, weights file) described in one sentence."""
