defmodule ElixirApp.OrderWorkflow do
  @moduledoc """
  A workflow written in Elixir: prices an order with one activity per line, then
  totals it. Input and result are JSON payloads (maps with string keys).
  """
  @behaviour :aion_workflow

  @impl true
  def run(%{"order_id" => id, "lines" => lines}) do
    opts = %{start_to_close_timeout: 5_000, retry: %{maximum_attempts: 3, initial_interval: 100}}

    prices =
      for line <- lines do
        {:ok, price} = :aion_workflow.execute_activity({ElixirApp.Pricing, :price}, [line], opts)
        price
      end

    {:ok, %{"order_id" => id, "total" => Enum.sum(prices)}}
  end
end

defmodule ElixirApp.Pricing do
  @moduledoc "The activity: any Elixir function, called as `apply(M, F, Args)`."

  @spec price(map()) :: {:ok, integer()}
  def price(%{"sku" => _sku, "qty" => qty, "unit_price" => unit}), do: {:ok, qty * unit}
end
