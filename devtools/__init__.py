"""Demo data and the scale seed for development and load work: run by `flask --app app seed`,
never imported by the production packages."""
