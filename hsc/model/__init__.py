"""HSCNet: configuration, building blocks, span maths and losses."""
