defmodule ElixirApp.OrderWorkflowTest do
  use ExUnit.Case, async: false

  @tag :needs_engine
  test "an Elixir workflow starts, runs its activities and is awaited" do
    input = %{
      "order_id" => "ex-1",
      "lines" => [
        %{"sku" => "widget", "qty" => 2, "unit_price" => 150},
        %{"sku" => "gadget", "qty" => 1, "unit_price" => 999}
      ]
    }

    {:ok, %{workflow_id: id}} = :aion.start(ElixirApp.OrderWorkflow, input, %{id: "ex-1"})
    assert {:ok, %{"order_id" => "ex-1", "total" => 1299}} = :aion.await(id, 10_000)

    {:ok, history} = :aion.history(id)
    types = Enum.map(history, & &1.type)
    assert hd(types) == :workflow_started
    assert List.last(types) == :workflow_completed
    assert Enum.count(types, &(&1 == :activity_completed)) == 2
  end

  test "the workflow module implements the aion_workflow behaviour" do
    behaviours = ElixirApp.OrderWorkflow.module_info(:attributes)[:behaviour]
    assert :aion_workflow in behaviours
    assert function_exported?(ElixirApp.OrderWorkflow, :run, 1)
  end
end
