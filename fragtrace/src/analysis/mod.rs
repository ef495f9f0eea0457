//! Attribution and statistics over decoded events.
