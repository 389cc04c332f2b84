"""Plain backtrader strategies, unchanged from where they come from: none imports btperp."""
