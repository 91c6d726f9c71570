"""Public facts and small lexicons the task generators draw from (written for tutti, no downloads).

Each table is plain data: ``COUNTRIES`` rows are ``(country, capital, currency)`` with the currency's short
common name; ``ANTONYMS`` are ``(word, opposite)`` pairs; ``POSITIVE`` / ``NEGATIVE`` are review adjectives;
``WORDS`` are common lowercase English words for letter tasks.
"""

from __future__ import annotations

_COUNTRIES = """
Afghanistan|Kabul|afghani
Albania|Tirana|lek
Algeria|Algiers|dinar
Argentina|Buenos Aires|peso
Armenia|Yerevan|dram
Australia|Canberra|dollar
Austria|Vienna|euro
Azerbaijan|Baku|manat
Bangladesh|Dhaka|taka
Belarus|Minsk|ruble
Belgium|Brussels|euro
Bolivia|Sucre|boliviano
Brazil|Brasilia|real
Bulgaria|Sofia|lev
Cambodia|Phnom Penh|riel
Cameroon|Yaounde|franc
Canada|Ottawa|dollar
Chile|Santiago|peso
China|Beijing|yuan
Colombia|Bogota|peso
Costa Rica|San Jose|colon
Croatia|Zagreb|euro
Cuba|Havana|peso
Czech Republic|Prague|koruna
Denmark|Copenhagen|krone
Ecuador|Quito|dollar
Egypt|Cairo|pound
Estonia|Tallinn|euro
Ethiopia|Addis Ababa|birr
Fiji|Suva|dollar
Finland|Helsinki|euro
France|Paris|euro
Georgia|Tbilisi|lari
Germany|Berlin|euro
Ghana|Accra|cedi
Greece|Athens|euro
Guatemala|Guatemala City|quetzal
Honduras|Tegucigalpa|lempira
Hungary|Budapest|forint
Iceland|Reykjavik|krona
India|New Delhi|rupee
Indonesia|Jakarta|rupiah
Iran|Tehran|rial
Iraq|Baghdad|dinar
Ireland|Dublin|euro
Israel|Jerusalem|shekel
Italy|Rome|euro
Jamaica|Kingston|dollar
Japan|Tokyo|yen
Jordan|Amman|dinar
Kazakhstan|Astana|tenge
Kenya|Nairobi|shilling
Kuwait|Kuwait City|dinar
Kyrgyzstan|Bishkek|som
Laos|Vientiane|kip
Latvia|Riga|euro
Lebanon|Beirut|pound
Lithuania|Vilnius|euro
Malaysia|Kuala Lumpur|ringgit
Mexico|Mexico City|peso
Mongolia|Ulaanbaatar|tugrik
Morocco|Rabat|dirham
Myanmar|Naypyidaw|kyat
Nepal|Kathmandu|rupee
Netherlands|Amsterdam|euro
New Zealand|Wellington|dollar
Nicaragua|Managua|cordoba
Nigeria|Abuja|naira
North Korea|Pyongyang|won
Norway|Oslo|krone
Pakistan|Islamabad|rupee
Panama|Panama City|balboa
Paraguay|Asuncion|guarani
Peru|Lima|sol
Philippines|Manila|peso
Poland|Warsaw|zloty
Portugal|Lisbon|euro
Qatar|Doha|riyal
Romania|Bucharest|leu
Russia|Moscow|ruble
Saudi Arabia|Riyadh|riyal
Serbia|Belgrade|dinar
Singapore|Singapore|dollar
Slovakia|Bratislava|euro
Slovenia|Ljubljana|euro
South Africa|Pretoria|rand
South Korea|Seoul|won
Spain|Madrid|euro
Sri Lanka|Colombo|rupee
Sweden|Stockholm|krona
Switzerland|Bern|franc
Syria|Damascus|pound
Tajikistan|Dushanbe|somoni
Tanzania|Dodoma|shilling
Thailand|Bangkok|baht
Tunisia|Tunis|dinar
Turkey|Ankara|lira
Uganda|Kampala|shilling
Ukraine|Kyiv|hryvnia
United Arab Emirates|Abu Dhabi|dirham
United Kingdom|London|pound
United States|Washington|dollar
Uruguay|Montevideo|peso
Uzbekistan|Tashkent|som
Venezuela|Caracas|bolivar
Vietnam|Hanoi|dong
Yemen|Sanaa|rial
Zambia|Lusaka|kwacha
Zimbabwe|Harare|dollar
"""

COUNTRIES: tuple[tuple[str, str, str], ...] = tuple(
    tuple(line.split("|")) for line in _COUNTRIES.strip().splitlines()  # type: ignore[misc]
)

_ANTONYMS = """
hot cold|big small|tall short|fast slow|happy sad|light dark|open closed|full empty|early late|hard soft
rich poor|young old|strong weak|thick thin|wet dry|loud quiet|clean dirty|high low|wide narrow|deep shallow
ascend descend|cheap expensive|easy difficult|first last|begin end|push pull|buy sell|win lose|give take|arrive leave
above below|inside outside|before after|up down|left right|north south|east west|day night|summer winter|love hate
friend enemy|true false|alive dead|awake asleep|brave cowardly|calm nervous|clever stupid|kind cruel|polite rude|safe dangerous
smooth rough|sweet sour|sharp blunt|tight loose|near far|always never|forget remember|accept refuse|increase decrease|add subtract
major minor|maximum minimum|positive negative|public private|rare common|simple complex|ancient modern|guilty innocent|success failure|victory defeat
question answer|entrance exit|import export|inhale exhale|include exclude|wild tame|raw cooked|sunny cloudy|fresh stale|noisy silent
generous stingy|humble proud|lazy diligent|patient impatient|visible invisible|possible impossible|legal illegal|honest dishonest|agree disagree|appear disappear
attack defend|borrow lend|catch throw|freeze melt|float sink|laugh cry|rise fall|shout whisper|teach learn|wake sleep
fat lean|cheerful gloomy|pretty ugly|healthy sick|vertical horizontal|crowded deserted|fancy plain|gentle harsh|messy tidy|shiny dull
"""

ANTONYMS: tuple[tuple[str, str], ...] = tuple(
    tuple(pair.split()) for line in _ANTONYMS.strip().splitlines() for pair in line.split("|")  # type: ignore[misc]
)

POSITIVE: tuple[str, ...] = (
    "excellent", "wonderful", "delicious", "friendly", "brilliant", "lovely", "superb", "great", "fantastic",
    "charming", "pleasant", "perfect", "amazing", "helpful", "fresh", "beautiful", "outstanding", "cozy",
)
NEGATIVE: tuple[str, ...] = (
    "terrible", "awful", "bland", "rude", "boring", "dirty", "disappointing", "poor", "horrible", "noisy",
    "stale", "dreadful", "mediocre", "slow", "unpleasant", "greasy", "cramped", "overpriced",
)
ASPECTS: tuple[str, ...] = (
    "food", "service", "staff", "room", "music", "view", "coffee", "price", "menu", "plot", "acting", "ending",
    "screen", "battery", "design", "delivery", "soup", "bed", "location", "sound",
)

WORDS: tuple[str, ...] = tuple(
    ["apple", "river", "garden", "window", "pencil", "orange", "silver", "planet", "bridge", "candle", "doctor", "forest", "guitar", "hammer", "island", "jacket", "kitten", "ladder", "market", "needle", "ocean", "pepper", "rabbit", "saddle", "tunnel", "violin", "wallet", "yellow", "zebra", "anchor", "basket", "castle", "dinner", "engine", "finger", "glass", "honey", "insect", "jungle", "kettle", "lemon", "mirror", "napkin", "oyster", "pillow", "quartz", "rocket", "summer", "tomato", "umbrella", "valley", "winter", "yogurt", "bottle", "carpet", "dragon", "eagle", "feather", "golden", "harbor", "iron", "jelly", "kingdom", "lizard", "marble", "nectar", "object", "parrot", "quilt", "ribbon", "spider", "ticket", "uncle", "velvet", "walnut", "badge", "cactus", "desert", "energy", "fabric", "gravel", "helmet", "igloo", "jigsaw", "koala", "lantern", "meadow", "nickel", "olive", "puzzle", "quiver", "radish", "shadow", "timber", "unicorn", "vendor", "wizard", "yacht", "zipper", "almond", "blanket", "cotton", "dolphin", "elbow", "falcon", "ginger", "hollow", "indigo", "jersey", "kernel", "lobster", "muffin", "noodle", "orbit", "pebble", "rescue", "salmon", "turtle", "utensil", "vessel", "wagon", "whistle", "bamboo", "cheese", "cherry", "cloud", "crystal", "diamond", "flower", "grape", "horse", "lamp", "magnet", "monkey", "mountain", "nurse", "paper", "pizza", "queen", "robot", "school", "shirt", "snake", "spoon", "stone", "sugar", "table", "tiger", "train", "water", "button"]
)
