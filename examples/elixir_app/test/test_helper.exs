# A fresh database for every run, then start aion (mix test runs with --no-start).
db = Path.join(System.tmp_dir!(), "aion_elixir_#{System.unique_integer([:positive])}.db")
Application.put_env(:aion, :db_path, String.to_charlist(db))

{:ok, _} = Application.ensure_all_started(:aion)
ExUnit.start()

ExUnit.after_suite(fn _ ->
  _ = Application.stop(:aion)
  for suffix <- ["", "-wal", "-shm"], do: File.rm(db <> suffix)
end)
