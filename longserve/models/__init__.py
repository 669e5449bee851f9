"""The models longserve ships; each is one `longserve.Model` subclass."""
