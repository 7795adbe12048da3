"""The positions' one vocabulary: the Position enum, whose constants stay plain strings in stored files."""
import json
import pickle

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, POSITION_ATTRS, POSITION_FLAGS, Position


def test_the_position_constants_are_the_enums_values_and_plain_strings():
    assert [ENCODER_SELF, DECODER_SELF, DECODER_CROSS] == [p.value for p in Position]
    assert all(type(p) is str for p in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS))
    assert Position(DECODER_CROSS) is Position.DECODER_CROSS and Position.DECODER_CROSS == DECODER_CROSS
    # a checkpoint or report keyed by positions holds strings, not the plugin's class
    assert b"Position" not in pickle.dumps({ENCODER_SELF: 1, DECODER_CROSS: 2})
    assert json.dumps({DECODER_SELF: 1}) == '{"decoder_self": 1}'
    assert set(POSITION_FLAGS) == set(POSITION_ATTRS) == set(Position)
