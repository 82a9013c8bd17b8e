"""One APIRouter per resource (STYLE.md B7)."""
