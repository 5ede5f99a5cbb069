"""The loop: cycles of observe, sync, plan, apply and record, for every space, once or forever."""
