//! Terarchitect agent: runner, Director and OpenCode worker that turn a ticket into a pull request
