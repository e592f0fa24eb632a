"""Physics twins: emulators holding a hidden ground truth, and device ports implemented on them."""
