"""What every service shares: contracts, settings, errors, wire format."""
