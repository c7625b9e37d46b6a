from src.inventory import Item, low_stock, parse_config, total_value


def make_items():
    return [
        Item("A1", "Hammer", "tools", 4, 12.50),
        Item("A2", "Nails (box)", "hardware", 40, 3.20),
        Item("A3", "Tape measure", "tools", 9, 7.95),
    ]


def test_total_value():
    assert total_value(make_items()) == 249.55


def test_low_stock_default_threshold():
    names = [i.name for i in low_stock(make_items())]
    assert names == ["Hammer"]


def test_low_stock_custom_threshold():
    assert len(low_stock(make_items(), threshold=10)) == 2


def test_parse_config(tmp_path):
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[inventory]\ncurrency = USD\nlow_stock_threshold = 3\n")
    result = parse_config(cfg)
    assert result["currency"] == "USD"
    assert result["low_stock_threshold"] == 3
    assert result["report_width"] == 60
