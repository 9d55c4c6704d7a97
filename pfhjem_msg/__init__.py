"""pfhjem-msg: receives KITH messages beside a municipal message hub and makes sure the ones
marked «Pakkeforløp hjem for pasienter med kreft» reach the case unit and the GP."""

__version__ = "0.2.0"
