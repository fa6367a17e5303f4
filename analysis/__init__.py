"""Analysis: reads run folders from disk only (never imports brian2, torch or foolbox)."""
