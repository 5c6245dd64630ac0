import Config

# The test starts aion itself (mix test --no-start) after choosing a fresh database.
config :aion, db_path: "aion_elixir.db"
