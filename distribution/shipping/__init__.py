"""Shipping: the fulfilment queue, labels and label runs, carrier manifests and parcel incidents."""
